{#-
  occ_thank_you: one row per customer whose first (not cancelled) order was placed
  inside the night's window. The occasion date is the night's date.
-#}
with facts as (
    select customer_id, first_order_id, first_order_at
    from customer_facts
    where first_order_at >= {{ ts("window_start") }}
      and first_order_at < {{ ts("window_end") }}
),

final as (
    select
        facts.customer_id,
        'thank_you' as occasion,
        {{ as_date("night") }} as occasion_date,
        facts.first_order_id as order_id
    from facts
)

select * from final
