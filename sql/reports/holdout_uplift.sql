{#-
  holdout_uplift: per occasion and group (messaged = selected, holdout), how many customers
  bought again within 30, 60 and 90 days of the occasion date. Only occasions whose N-day
  window has fully passed by the report's night count towards the N-day rate (eligible_N).
  Grain: one row per occasion and status. Params: night (date).
-#}
with occ as (
    select occasion_id, customer_id, occasion, status, occasion_date
    from occasions
    where status in ('selected', 'holdout')
      and occasion_date <= {{ as_date("night") }}
),

first_purchase_after as (
    select
        occ.occasion_id,
        min({{ days_between("occ.occasion_date", "orders.ordered_at") }}) as days_to_purchase
    from occ
    inner join stg_orders as orders
        on orders.customer_id = occ.customer_id
        and orders.status = 'placed'
        and orders.ordered_at >= occ.occasion_date
    group by occ.occasion_id
),

measured as (
    select
        occ.occasion,
        occ.status,
        {{ days_between("occ.occasion_date", as_date("night")) }} as days_observed,
        first_purchase_after.days_to_purchase
    from occ
    left join first_purchase_after on first_purchase_after.occasion_id = occ.occasion_id
),

final as (
    select
        occasion,
        status,
        count(*) as customers,
        sum(case when days_observed >= 30 then 1 else 0 end) as eligible_30,
        sum(case when days_observed >= 30 and days_to_purchase < 30 then 1 else 0 end) as bought_30,
        sum(case when days_observed >= 60 then 1 else 0 end) as eligible_60,
        sum(case when days_observed >= 60 and days_to_purchase < 60 then 1 else 0 end) as bought_60,
        sum(case when days_observed >= 90 then 1 else 0 end) as eligible_90,
        sum(case when days_observed >= 90 and days_to_purchase < 90 then 1 else 0 end) as bought_90
    from measured
    group by occasion, status
)

select * from final
