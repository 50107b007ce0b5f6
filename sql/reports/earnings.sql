{#-
  earnings: what the customers of an occasion brought in the 30, 60 and 90 days from its date,
  messaged (selected for a message: intention to treat) against the holdout, per occasion,
  month of the occasion date and group. Per horizon N, only occasions whose N days have fully
  passed by the report's night count (eligible_N); for them: how many bought again (bought_N),
  and the sums and sums of squares of their revenue and margin in the window (kept items,
  net of returns), from which the report derives means, variances and a Welch interval.
  Grain: one row per occasion, month and status. Params: night (date).
  With the flag by_variant: only messages of templates with variants, the group is the
  variant ("a", "b") instead of the status, and the occasion reads "<occasion>/<language>".
-#}
with occ as (
    {% if by_variant -%}
    select
        occasions.occasion_id,
        occasions.customer_id,
        occasions.occasion || '/' || occasions.language as occasion,
        outbox.variant as status,
        occasions.occasion_date,
        {{ year_month("occasions.occasion_date") }} as occasion_month,
        {{ days_between("occasions.occasion_date", as_date("night")) }} as days_observed
    from occasions
    inner join outbox
        on outbox.customer_id = occasions.customer_id
        and outbox.occasion = occasions.occasion
        and outbox.occasion_date = occasions.occasion_date
    where occasions.status = 'selected'
      and outbox.variant is not null
      and occasions.occasion_date <= {{ as_date("night") }}
    {% else -%}
    select
        occasion_id,
        customer_id,
        occasion,
        status,
        occasion_date,
        {{ year_month("occasion_date") }} as occasion_month,
        {{ days_between("occasion_date", as_date("night")) }} as days_observed
    from occasions
    where status in ('selected', 'holdout')
      and occasion_date <= {{ as_date("night") }}
    {% endif -%}
),

order_values as (
    select
        orders.order_id,
        orders.customer_id,
        orders.ordered_at,
        sum((items.quantity - items.returned_quantity) * items.unit_price) as revenue,
        sum((items.quantity - items.returned_quantity) * (items.unit_price - items.unit_cost)) as margin
    from stg_orders as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    where orders.status = 'placed'
    group by orders.order_id, orders.customer_id, orders.ordered_at
),

windowed as (
    select
        occ.occasion_id,
        {{ days_between("occ.occasion_date", "order_values.ordered_at") }} as days_after,
        order_values.revenue,
        order_values.margin
    from occ
    inner join order_values
        on order_values.customer_id = occ.customer_id
        and order_values.ordered_at >= occ.occasion_date
),

per_occasion as (
    select
        occ.occasion,
        occ.occasion_month,
        occ.status,
        occ.days_observed,
        max(case when windowed.days_after < 30 then 1 else 0 end) as bought_30,
        coalesce(sum(case when windowed.days_after < 30 then windowed.revenue end), 0) as revenue_30,
        coalesce(sum(case when windowed.days_after < 30 then windowed.margin end), 0) as margin_30,
        max(case when windowed.days_after < 60 then 1 else 0 end) as bought_60,
        coalesce(sum(case when windowed.days_after < 60 then windowed.revenue end), 0) as revenue_60,
        coalesce(sum(case when windowed.days_after < 60 then windowed.margin end), 0) as margin_60,
        max(case when windowed.days_after < 90 then 1 else 0 end) as bought_90,
        coalesce(sum(case when windowed.days_after < 90 then windowed.revenue end), 0) as revenue_90,
        coalesce(sum(case when windowed.days_after < 90 then windowed.margin end), 0) as margin_90
    from occ
    left join windowed on windowed.occasion_id = occ.occasion_id
    group by occ.occasion_id, occ.occasion, occ.occasion_month, occ.status, occ.days_observed
),

final as (
    select
        occasion,
        occasion_month,
        status,
        count(*) as customers,
        sum(case when days_observed >= 30 then 1 else 0 end) as eligible_30,
        sum(case when days_observed >= 30 then bought_30 else 0 end) as bought_30,
        sum(case when days_observed >= 30 then revenue_30 else 0 end) as revenue_30,
        sum(case when days_observed >= 30 then revenue_30 * revenue_30 else 0 end) as revenue_sq_30,
        sum(case when days_observed >= 30 then margin_30 else 0 end) as margin_30,
        sum(case when days_observed >= 30 then margin_30 * margin_30 else 0 end) as margin_sq_30,
        sum(case when days_observed >= 60 then 1 else 0 end) as eligible_60,
        sum(case when days_observed >= 60 then bought_60 else 0 end) as bought_60,
        sum(case when days_observed >= 60 then revenue_60 else 0 end) as revenue_60,
        sum(case when days_observed >= 60 then revenue_60 * revenue_60 else 0 end) as revenue_sq_60,
        sum(case when days_observed >= 60 then margin_60 else 0 end) as margin_60,
        sum(case when days_observed >= 60 then margin_60 * margin_60 else 0 end) as margin_sq_60,
        sum(case when days_observed >= 90 then 1 else 0 end) as eligible_90,
        sum(case when days_observed >= 90 then bought_90 else 0 end) as bought_90,
        sum(case when days_observed >= 90 then revenue_90 else 0 end) as revenue_90,
        sum(case when days_observed >= 90 then revenue_90 * revenue_90 else 0 end) as revenue_sq_90,
        sum(case when days_observed >= 90 then margin_90 else 0 end) as margin_90,
        sum(case when days_observed >= 90 then margin_90 * margin_90 else 0 end) as margin_sq_90
    from per_occasion
    group by occasion, occasion_month, status
)

select * from final
order by occasion, occasion_month, status
