{#-
  occ_next_purchase / occ_accessory (one model, `kind` chooses): customers whose last order
  is `delay_days` nights old, counted from the night it arrived, who have a rank-1
  recommendation of that kind, belong to an ABC class that gets offers (tonight's snapshot),
  and got no message of this occasion in the `period_days` nights before.
  "Arrived": an order counts from its own night N (the night whose window holds ordered_at)
  when the warehouse had it by then; an order that arrived k nights late (arrived_night =
  N + k, k <= late_max_days) counts from its arrival night instead, so that a late row gets
  its follow-up as late as it came, never not at all. Older late arrivals get none (as they
  get no thank-you).
  Params: night, delayed_start, delayed_end (the window of night D - delay_days),
  arrival_night (D - delay_days, a date), late_from (the window start of night
  D - delay_days - late_max_days), kind, period_start (date), offer_a, offer_b, offer_c.
-#}
with recent_buyers as (
    select distinct orders.customer_id
    from stg_orders as orders
    inner join customer_facts as facts
        on facts.customer_id = orders.customer_id
        and facts.last_order_at = orders.ordered_at
    where orders.status = 'placed'
      and (
          (
              orders.ordered_at >= {{ ts("delayed_start") }}
              and orders.ordered_at < {{ ts("delayed_end") }}
              and (orders.arrived_night is null or orders.arrived_night <= {{ as_date("arrival_night") }})
          )
          or (
              orders.arrived_night = {{ as_date("arrival_night") }}
              and orders.ordered_at >= {{ ts("late_from") }}
              and orders.ordered_at < {{ ts("delayed_start") }}
          )
      )
),

already_told as (
    select customer_id
    from occasions
    where occasion = :kind
      and status in ('selected', 'holdout')
      and night >= {{ as_date("period_start") }}
      and night < {{ as_date("night") }}
),

final as (
    select
        rec.customer_id,
        :kind as occasion,
        rec.product_id,
        rec.because_product_id,
        rec.score
    from recommendations as rec
    inner join recent_buyers on recent_buyers.customer_id = rec.customer_id
    inner join segment_snapshots as snap
        on snap.customer_id = rec.customer_id
        and snap.night = {{ as_date("night") }}
    where rec.kind = :kind
      and (
          (snap.abc_class = 'A' and :offer_a = 1)
          or (snap.abc_class = 'B' and :offer_b = 1)
          or (snap.abc_class = 'C' and :offer_c = 1)
      )
      and rec.rank = 1
      and rec.customer_id not in (select customer_id from already_told)
)

select * from final
