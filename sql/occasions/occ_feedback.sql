{#-
  occ_feedback (candidates): placed orders whose UTC time lies within a day either side of
  the local dates `feedback_delay_days` before the night's target dates (no time zone is more
  than a day from UTC). The caller keeps, per customer, the latest order whose date in the
  customer's own zone is exactly that many calendar days before the customer's target date:
  ten local days, not 240 hours, so a clock change in between does not move it.
  Params: orders_from, orders_to (naive UTC, half-open).
-#}
with final as (
    select customer_id, 'feedback' as occasion, order_id, ordered_at
    from stg_orders
    where status = 'placed'
      and ordered_at >= {{ ts("orders_from") }}
      and ordered_at < {{ ts("orders_to") }}
)

select * from final
