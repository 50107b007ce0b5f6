{#-
  customer_facts: one row per customer known to the warehouse, buyers or not.

  Grain: customer. Cancelled orders are excluded from every figure except
  `cancelled_orders`; revenue and margin are net of returned items. The trailing-year
  figures cover [year_start, window_end).

  Two order values: `avg_order_value`, revenue per placed order; and
  `repeat_avg_order_value`, the Gamma-Gamma model's monetary value (Fader, Hardie & Lee
  2005): the mean value of the REPEAT transactions, a transaction being an order day (UTC),
  as BG/NBD counts them (`order_days`):
      kept revenue of the order days after the first / (order_days - 1)
  NULL for customers with one order day (no repeat transaction). The first order is left
  out because it differs (issue #12: in the demo, first orders average about twice the
  repeat ones). Both divide by 1.0 * ...: SQLite stores a whole-euro price as an integer,
  and integer / integer would truncate.

  Incremental: only the customers listed in `changed_customers` for the night are
  recomputed (the caller adds those whose orders rolled out of the trailing year).
  Params: night (date), year_start, window_end (naive UTC timestamps).
-#}
with customers as (
    select customer_id
    from stg_customers
    where 1 = 1 {{ changed_only("customer_id") }}
),

all_orders as (
    select order_id, customer_id, ordered_at, status
    from stg_orders
    where 1 = 1 {{ changed_only("customer_id") }}
),

placed as (
    -- from the table, not from all_orders: PostgreSQL estimates a filter on a CTE's rows at 0.5 %,
    -- and with 21,873 orders expected instead of 4.2M it read each order's lines through the index
    select order_id, customer_id, ordered_at
    from stg_orders
    where status = 'placed' {{ changed_only("customer_id") }}
),

-- the customer's first order day: lines of later days are repeat transactions. Grouped and
-- joined back, not a window over the orders: PostgreSQL fed that window from the customer index,
-- 4.2M random heap reads at 1M customers (issue 15: about 13 s of the first night's facts)
first_days as (
    select customer_id, min({{ day_of("ordered_at") }}) as first_day
    from placed
    group by customer_id
),

orders as (
    select
        placed.order_id,
        placed.customer_id,
        placed.ordered_at,
        case when {{ day_of("placed.ordered_at") }} > first_days.first_day then 1 else 0 end as repeat_day
    from placed
    inner join first_days on first_days.customer_id = placed.customer_id
),

lines as (
    select
        orders.order_id,
        orders.customer_id,
        orders.ordered_at,
        orders.repeat_day,
        products.category,
        items.quantity,
        items.returned_quantity,
        {{ cents("(items.quantity - items.returned_quantity) * items.unit_price") }} as revenue,
        {{ cents("items.returned_quantity * items.unit_price") }} as returns_value,
        {{ cents("(items.quantity - items.returned_quantity) * (items.unit_price - items.unit_cost)") }}
            as margin
    from orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    left join stg_products as products on products.product_id = items.product_id
),

-- Per customer straight from the lines (never joined back to a per-order CTE: SQLite
-- would scan such a CTE once per order, which is quadratic).
line_totals as (
    select
        customer_id,
        sum(quantity) as items,
        sum(returned_quantity) as returned_items,
        sum(revenue) as revenue,
        sum(case when repeat_day = 1 then revenue else 0 end) as repeat_revenue,
        sum(returns_value) as returns_value,
        sum(margin) as margin,
        sum(case when ordered_at >= {{ ts("year_start") }} then revenue else 0 end) as revenue_12m,
        sum(case when ordered_at >= {{ ts("year_start") }} then margin else 0 end) as margin_12m
    from lines
    group by customer_id
),

order_stats as (
    select
        customer_id,
        min(ordered_at) as first_order_at,
        max(ordered_at) as last_order_at,
        count(*) as orders,
        count(distinct {{ day_of("ordered_at") }}) as order_days,
        sum(case when ordered_at >= {{ ts("year_start") }} then 1 else 0 end) as orders_12m
    from orders
    group by customer_id
),

per_customer as (
    select
        order_stats.customer_id,
        order_stats.first_order_at,
        order_stats.last_order_at,
        order_stats.orders,
        order_stats.order_days,
        order_stats.orders_12m,
        coalesce(line_totals.items, 0) as items,
        coalesce(line_totals.returned_items, 0) as returned_items,
        {{ from_cents("coalesce(line_totals.revenue, 0)") }} as revenue,
        {{ from_cents("coalesce(line_totals.repeat_revenue, 0)") }} as repeat_revenue,
        {{ from_cents("coalesce(line_totals.returns_value, 0)") }} as returns_value,
        {{ from_cents("coalesce(line_totals.margin, 0)") }} as margin,
        {{ from_cents("coalesce(line_totals.revenue_12m, 0)") }} as revenue_12m,
        {{ from_cents("coalesce(line_totals.margin_12m, 0)") }} as margin_12m
    from order_stats
    left join line_totals on line_totals.customer_id = order_stats.customer_id
),

cancelled as (
    select customer_id, count(*) as cancelled_orders
    from all_orders
    where status = 'cancelled'
    group by customer_id
),

first_orders as (
    select orders.customer_id, min(orders.order_id) as first_order_id
    from orders
    inner join per_customer
        on per_customer.customer_id = orders.customer_id
        and per_customer.first_order_at = orders.ordered_at
    group by orders.customer_id
),

category_revenue as (
    select
        customer_id,
        category,
        row_number() over (partition by customer_id order by sum(revenue) desc, category) as position
    from lines
    where category is not null
    group by customer_id, category
),

final as (
    select
        customers.customer_id,
        per_customer.first_order_at,
        per_customer.last_order_at,
        first_orders.first_order_id,
        coalesce(per_customer.orders, 0) as orders,
        coalesce(per_customer.order_days, 0) as order_days,
        coalesce(cancelled.cancelled_orders, 0) as cancelled_orders,
        coalesce(per_customer.items, 0) as items,
        coalesce(per_customer.returned_items, 0) as returned_items,
        round(coalesce(per_customer.revenue, 0), 2) as revenue,
        round(coalesce(per_customer.returns_value, 0), 2) as returns_value,
        round(coalesce(per_customer.margin, 0), 2) as margin,
        case
            when per_customer.orders > 0 then round(1.0 * per_customer.revenue / per_customer.orders, 2)
        end as avg_order_value,
        case
            when per_customer.order_days > 1
                then round(1.0 * per_customer.repeat_revenue / (per_customer.order_days - 1), 2)
        end as repeat_avg_order_value,
        case
            when per_customer.order_days > 1
                then round(
                    1.0 * {{ days_between("per_customer.first_order_at", "per_customer.last_order_at") }}
                    / (per_customer.order_days - 1), 2
                )
        end as usual_gap_days,
        category_revenue.category as preferred_category,
        coalesce(per_customer.orders_12m, 0) as orders_12m,
        round(coalesce(per_customer.revenue_12m, 0), 2) as revenue_12m,
        round(coalesce(per_customer.margin_12m, 0), 2) as margin_12m,
        {{ as_date("night") }} as night
    from customers
    left join per_customer on per_customer.customer_id = customers.customer_id
    left join first_orders on first_orders.customer_id = customers.customer_id
    left join cancelled on cancelled.customer_id = customers.customer_id
    left join category_revenue
        on category_revenue.customer_id = customers.customer_id
        and category_revenue.position = 1
)

select * from final
