{#-
  occ_next_purchase / occ_accessory (one model, `kind` chooses): customers whose last order
  is `delay_days` nights old, counted from the night it arrived, who have a recommendation
  of that kind that follows from a product of that order (issue #12: the best-ranked such
  one; none, no message), belong to an ABC class that gets offers (tonight's snapshot),
  and got no message of this occasion in the `period_days` nights before.
  Each row carries what the message explains the suggestion with: `rule_kind`
  ('next_purchase' product sequence, 'next_category' category sequence, 'accessory'),
  `share` (the rule's confidence in whole percent) and `made_for` (1: the catalogue lists
  the product as an accessory of `because_product_id`). When the rule no longer holds
  tonight, rule_kind and share are NULL and the message quotes no number.
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

trigger_products as (
    -- the kept products of the order that triggers the message: the customer's last order
    -- (all orders at that instant), the one recent_buyers found in the delayed window
    select distinct orders.customer_id, items.product_id
    from stg_orders as orders
    inner join recent_buyers on recent_buyers.customer_id = orders.customer_id
    inner join customer_facts as facts
        on facts.customer_id = orders.customer_id
        and facts.last_order_at = orders.ordered_at
    inner join stg_order_items as items on items.order_id = orders.order_id
    where orders.status = 'placed'
      and items.quantity > items.returned_quantity
),

explaining_rules as (
    -- the rule a message quotes for (because, product): the product-level rule where there
    -- is one with the higher score, else the category-level one (as the recommendations chose).
    -- "No better rule for the pair" rather than a window over all rules: PostgreSQL, expecting a
    -- single recent buyer, nested a loop around the window and ranked every rule again for each
    -- suggestion (1.26 s of the occasions' 1.4 s at 100k customers); this is a lookup per pair.
    select
        rules.antecedent_product_id,
        rules.consequent_product_id,
        rules.kind,
        rules.confidence,
        rules.pairs
    from product_rules as rules
    where rules.kind in ('next_purchase', 'next_category', 'accessory')
      and (rules.kind = 'accessory') = (:kind = 'accessory')
      and not exists (
          select 1
          from product_rules as better
          where better.antecedent_product_id = rules.antecedent_product_id
            and better.consequent_product_id = rules.consequent_product_id
            and better.kind in ('next_purchase', 'next_category', 'accessory')
            and (better.kind = 'accessory') = (:kind = 'accessory')
            and (
                round(better.confidence * better.lift, 6) > round(rules.confidence * rules.lift, 6)
                or (
                    round(better.confidence * better.lift, 6) = round(rules.confidence * rules.lift, 6)
                    and better.kind > rules.kind
                )
            )
      )
),

related as (
    -- suggestions that follow from a product of the triggering order, with the rule behind
    -- each; a customer without one gets no message of this kind tonight
    select
        rec.customer_id,
        rec.rank,
        rec.product_id,
        rec.because_product_id,
        rec.score,
        explaining_rules.kind as rule_kind,
        explaining_rules.confidence,
        case when consequent.accessory_for = rec.because_product_id then 1 else 0 end as made_for,
        row_number() over (partition by rec.customer_id order by rec.rank) as position
    from recommendations as rec
    inner join trigger_products
        on trigger_products.customer_id = rec.customer_id
        and trigger_products.product_id = rec.because_product_id
    left join explaining_rules
        on explaining_rules.antecedent_product_id = rec.because_product_id
        and explaining_rules.consequent_product_id = rec.product_id
    inner join stg_products as consequent on consequent.product_id = rec.product_id
    where rec.kind = :kind
),

final as (
    select
        related.customer_id,
        :kind as occasion,
        related.product_id,
        related.because_product_id,
        related.score,
        related.rule_kind,
        case
            when related.confidence is not null
                then cast(round(related.confidence * 100 + 0.000001) as integer)
        end as share,
        related.made_for
    from related
    inner join segment_snapshots as snap
        on snap.customer_id = related.customer_id
        and snap.night = {{ as_date("night") }}
    where related.position = 1
      and (
          (snap.abc_class = 'A' and :offer_a = 1)
          or (snap.abc_class = 'B' and :offer_b = 1)
          or (snap.abc_class = 'C' and :offer_c = 1)
      )
      and not exists (
          select 1 from already_told
          where already_told.customer_id = related.customer_id
      )
)

select * from final
