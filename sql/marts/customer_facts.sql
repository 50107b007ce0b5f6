{#-
  customer_facts: one row per customer (every customer in staging, buyers or not).
  Cancelled orders are excluded; revenue and margin are net of returned items.
  Incremental: recomputes only the customers changed in the night (`changed_customers`).
-#}
with customers as (
    select customer_id
    from stg_customers
    where 1 = 1 {{ changed_only("customer_id") }}
),

orders as (
    select order_id, customer_id, ordered_at
    from stg_orders
    where status = 'placed' {{ changed_only("customer_id") }}
),

order_lines as (
    select
        orders.order_id,
        sum(items.quantity) as items,
        sum((items.quantity - items.returned_quantity) * items.unit_price) as revenue,
        sum(items.returned_quantity * items.unit_price) as returns_value,
        sum((items.quantity - items.returned_quantity) * (items.unit_price - items.unit_cost)) as margin
    from orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    group by orders.order_id
),

per_customer as (
    select
        orders.customer_id,
        min(orders.ordered_at) as first_order_at,
        max(orders.ordered_at) as last_order_at,
        count(*) as orders,
        coalesce(sum(order_lines.items), 0) as items,
        coalesce(sum(order_lines.revenue), 0) as revenue,
        coalesce(sum(order_lines.returns_value), 0) as returns_value,
        coalesce(sum(order_lines.margin), 0) as margin
    from orders
    left join order_lines on order_lines.order_id = orders.order_id
    group by orders.customer_id
),

first_orders as (
    select orders.customer_id, min(orders.order_id) as first_order_id
    from orders
    inner join per_customer
        on per_customer.customer_id = orders.customer_id
        and per_customer.first_order_at = orders.ordered_at
    group by orders.customer_id
),

final as (
    select
        customers.customer_id,
        per_customer.first_order_at,
        per_customer.last_order_at,
        first_orders.first_order_id,
        coalesce(per_customer.orders, 0) as orders,
        coalesce(per_customer.items, 0) as items,
        round(coalesce(per_customer.revenue, 0), 2) as revenue,
        round(coalesce(per_customer.returns_value, 0), 2) as returns_value,
        round(coalesce(per_customer.margin, 0), 2) as margin,
        case
            when per_customer.orders > 0 then round(per_customer.revenue / per_customer.orders, 2)
        end as avg_order_value,
        {{ as_date("night") }} as night
    from customers
    left join per_customer on per_customer.customer_id = customers.customer_id
    left join first_orders on first_orders.customer_id = customers.customer_id
)

select * from final
