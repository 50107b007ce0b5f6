{#-
  occ_thank_you (candidates): orders that ARRIVED since the last night (their row was
  extracted tonight: updated_at in [arrived_from, window_end), arrived_from being the lower
  bound tonight's extract read orders from), whenever they were placed, so that an order
  placed at 23:50 whose row reaches the shop database at 00:20 is not lost between two
  windows. Two kinds of row, with the order's ordered_at:
  - first_order = 1: the customer's first (not cancelled) order arrived tonight, however
    late (the caller skips, with the reason, one more than thank_you_max_age_days late);
  - first_order = 0: A customers (tonight's snapshot) when `thank_every_order_for_a` is set,
    any other order arrived tonight and placed since `thank_from` (the age limit).
  The caller drops orders a thank_you was already decided for on an earlier night (an
  update of an old order arrives again) and keeps one row per customer.
  Params: night, window_end, arrived_from, thank_from, thank_every_order_for_a (0/1).
-#}
with arrived as (
    select customer_id, order_id, ordered_at
    from stg_orders
    where status = 'placed'
      and updated_at >= {{ ts("arrived_from") }}
      and updated_at < {{ ts("window_end") }}
      and ordered_at < {{ ts("window_end") }}
),

first_timers as (
    select arrived.customer_id, arrived.order_id, arrived.ordered_at
    from arrived
    inner join customer_facts as facts on facts.first_order_id = arrived.order_id
),

a_customers as (
    select arrived.customer_id, arrived.order_id, arrived.ordered_at
    from arrived
    inner join segment_snapshots as snap
        on snap.customer_id = arrived.customer_id
        and snap.night = {{ as_date("night") }}
        and snap.abc_class = 'A'
    where :thank_every_order_for_a = 1
      and arrived.ordered_at >= {{ ts("thank_from") }}
      -- not exists, not "not in": PostgreSQL cannot turn NOT IN into an anti-join, and with
      -- stale statistics it ran the subquery once per row (issue 15: hours at 1M customers)
      and not exists (
          select 1 from first_timers
          where first_timers.order_id = arrived.order_id
      )
),

final as (
    select customer_id, 'thank_you' as occasion, order_id, 1 as first_order, ordered_at from first_timers
    union all
    select customer_id, 'thank_you' as occasion, order_id, 0 as first_order, ordered_at from a_customers
)

select * from final
