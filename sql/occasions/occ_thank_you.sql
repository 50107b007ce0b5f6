{#-
  occ_thank_you: customers whose first (not cancelled) order was placed in the night's
  window; A customers (tonight's snapshot) also after every later order when
  `thank_every_order_for_a` is set. One row per customer; order_id is the order to thank for.
  Params: night, window_start, window_end, thank_every_order_for_a (0/1).
-#}
with window_orders as (
    select customer_id, max(order_id) as order_id
    from stg_orders
    where status = 'placed'
      and ordered_at >= {{ ts("window_start") }}
      and ordered_at < {{ ts("window_end") }}
    group by customer_id
),

first_timers as (
    select customer_id, first_order_id as order_id
    from customer_facts
    where first_order_at >= {{ ts("window_start") }}
      and first_order_at < {{ ts("window_end") }}
),

a_customers as (
    select window_orders.customer_id, window_orders.order_id
    from window_orders
    inner join segment_snapshots as snap
        on snap.customer_id = window_orders.customer_id
        and snap.night = {{ as_date("night") }}
        and snap.abc_class = 'A'
    where :thank_every_order_for_a = 1
      and window_orders.customer_id not in (select customer_id from first_timers)
),

final as (
    select customer_id, 'thank_you' as occasion, order_id, 1 as first_order from first_timers
    union all
    select customer_id, 'thank_you' as occasion, order_id, 0 as first_order from a_customers
)

select * from final
