{#-
  product_rules_basket: association rules on baskets (kind = 'accessory').

  Grain: one row per ordered (antecedent A, consequent B) that passes the thresholds in the
  accessory's direction, or is a catalogue accessory pair; built over the whole history,
  every night.

  A basket is one placed order with at least one kept line (quantity > returned_quantity);
  its products are the distinct products of its kept lines. The figures are measured for
  both directions (A -> B and B -> A differ in confidence); only one direction is kept.

      support    = baskets with A and B / all baskets
      confidence = baskets with A and B / baskets with A
      lift       = confidence / (baskets with B / all baskets)

  Direction (issue #12): an accessory rule points from a main product to something that
  goes with it, never back. A -> B is kept when
    * the catalogue says so (B.accessory_for = A): kept whatever its figures, also when the
      two were never bought together yet (figures 0 then); the recommendations rank
      these above every basket rule; or
    * the basket figures pass (pairs >= min_pairs, confidence >= min_confidence, lift > 1)
      AND the rule is oriented: B is strictly cheaper than A (an accessory costs less than
      what it is for: a kickstand never leads to the bike), B is not the product A is an
      accessory of (A.accessory_for <> B), and B is not made for another product
      (B.accessory_for is null or = A: a kickstand made for bike X does not fit bike Y).
  Products missing from stg_products have no price to orient by and are left out.

  Cost: the self-join runs over one row per (order, product), producing sum over baskets
  of k*(k-1) rows (k = distinct products of the basket); baskets are small, so this is
  a small multiple of the number of order lines.

  With the flag from_counts (the nightly run), the pair, basket and total counts are read from
  rule_pair_counts, rule_item_counts and rule_totals, which retention/rule_counts.py keeps up to
  date night by night from the same definitions as the CTEs below (issue #15); without it they
  are counted here from the whole history (full rebuild checks, offline evaluation).

  Params: night (date), min_pairs (int), min_confidence (float), rule_id_offset (int:
  rule ids continue after those of the other kind, so both kinds share the table); with the
  flag before_cutoff, cutoff (timestamp): only orders before it (offline evaluation).
-#}
{% if from_counts | default(false) -%}
with pairs as (
    {{ counted_pairs("accessory", "baskets") }}
),

basket_total as (
    select total as baskets
    from rule_totals
    where kind = 'accessory'
),
{%- else %}
with basket_items as (
    -- one row per (basket, product): a product twice in one order is one occurrence
    select distinct
        items.order_id,
        items.product_id
    from stg_orders as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    where orders.status = 'placed'
      and items.quantity > items.returned_quantity
      {{ before_cutoff_only() }}
),

product_baskets as (
    select product_id, count(*) as baskets
    from basket_items
    group by product_id
),

with_baskets as (
    -- each row carries its product's basket count, so that the pairs need no join back to
    -- per-product counts (which PostgreSQL misestimated into a product x product cross join)
    select
        basket_items.order_id,
        basket_items.product_id,
        product_baskets.baskets
    from basket_items
    inner join product_baskets on product_baskets.product_id = basket_items.product_id
),

basket_total as (
    select count(distinct order_id) as baskets
    from basket_items
),

pairs as (
    select
        this.product_id as antecedent_product_id,
        other.product_id as consequent_product_id,
        count(*) as pairs,
        max(this.baskets) as antecedent_baskets,
        max(other.baskets) as consequent_baskets
    from with_baskets as this
    inner join with_baskets as other
        on other.order_id = this.order_id
        and other.product_id <> this.product_id
    group by this.product_id, other.product_id
),
{%- endif %}

measured as (
    select
        pairs.antecedent_product_id,
        pairs.consequent_product_id,
        pairs.pairs,
        1.0 * pairs.pairs / basket_total.baskets as support,
        1.0 * pairs.pairs / pairs.antecedent_baskets as confidence,
        -- confidence / (baskets with B / baskets), as one division of exact counts
        (
            (1.0 * pairs.pairs * basket_total.baskets)
            / (1.0 * pairs.antecedent_baskets * pairs.consequent_baskets)
        ) as lift,
        case when consequent.accessory_for = pairs.antecedent_product_id then 1 else 0 end
            as is_catalogue,
        case
            when consequent.price < antecedent.price
                and (
                    antecedent.accessory_for is null
                    or antecedent.accessory_for <> pairs.consequent_product_id
                )
                and (
                    consequent.accessory_for is null
                    or consequent.accessory_for = pairs.antecedent_product_id
                )
                then 1
            else 0
        end as is_oriented
    from pairs
    cross join basket_total
    inner join stg_products as antecedent on antecedent.product_id = pairs.antecedent_product_id
    inner join stg_products as consequent on consequent.product_id = pairs.consequent_product_id
),

never_together as (
    -- catalogue pairs without a common basket yet: the catalogue alone vouches for them
    select
        main_product.product_id as antecedent_product_id,
        accessory.product_id as consequent_product_id,
        0 as pairs,
        0.0 as support,
        0.0 as confidence,
        0.0 as lift,
        1 as is_catalogue,
        1 as is_oriented
    from stg_products as accessory
    inner join stg_products as main_product on main_product.product_id = accessory.accessory_for
    where accessory.product_id <> main_product.product_id
      and not exists (
          select 1
          from pairs
          where pairs.antecedent_product_id = main_product.product_id
            and pairs.consequent_product_id = accessory.product_id
      )
),

kept as (
    select
        antecedent_product_id, consequent_product_id, pairs, support, confidence, lift
    from measured
    where is_catalogue = 1
       or (is_oriented = 1 and pairs >= :min_pairs and confidence >= :min_confidence and lift > 1)
    union all
    select
        antecedent_product_id, consequent_product_id, pairs, support, confidence, lift
    from never_together
),

final as (
    select
        :rule_id_offset + row_number() over (
            order by antecedent_product_id, consequent_product_id
        ) as rule_id,
        'accessory' as kind,
        antecedent_product_id,
        consequent_product_id,
        round(support, 6) as support,
        round(confidence, 6) as confidence,
        round(lift, 4) as lift,
        pairs,
        {{ as_date("night") }} as night
    from kept
)

select * from final
