{#-
  occ_feedback: customers with a placed order `feedback_delay_days` before the night's
  window (the window shifted back); the latest such order is the one asked about.
  Params: delayed_start, delayed_end.
-#}
with final as (
    select customer_id, 'feedback' as occasion, max(order_id) as order_id
    from stg_orders
    where status = 'placed'
      and ordered_at >= {{ ts("delayed_start") }}
      and ordered_at < {{ ts("delayed_end") }}
    group by customer_id
)

select * from final
