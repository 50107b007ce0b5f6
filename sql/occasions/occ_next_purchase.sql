{#-
  occ_next_purchase / occ_accessory (one model, `kind` chooses): customers whose last order
  was placed `delay_days` before the night's window (the same window shifted back), who have
  a rank-1 recommendation of that kind, belong to an ABC class that gets offers (tonight's
  snapshot), and got no message of this occasion in the `period_days` nights before.
  Params: night, window_start, window_end, delay_days (as shifted timestamps: delayed_start,
  delayed_end), kind, period_start (date), offer_a, offer_b, offer_c (1 if that class gets offers).
-#}
with recent_buyers as (
    select customer_id
    from customer_facts
    where last_order_at >= {{ ts("delayed_start") }}
      and last_order_at < {{ ts("delayed_end") }}
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
