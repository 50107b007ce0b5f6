{#-
  product_rules_basket: association rules on baskets (kind = 'accessory').

  Grain: one row per ordered (antecedent A, consequent B) that passes the thresholds or
  is a catalogue accessory pair; built over the whole history, every night.

  A basket is one placed order with at least one kept line (quantity > returned_quantity);
  its products are the distinct products of its kept lines. Both directions are rules of
  their own (A -> B and B -> A differ in confidence).

      support    = baskets with A and B / all baskets
      confidence = baskets with A and B / baskets with A
      lift       = confidence / (baskets with B / all baskets)

  Kept: pairs >= min_pairs, confidence >= min_confidence and lift > 1; A <> B.
  Catalogue accessories: when B.accessory_for = A the catalogue already vouches for the
  relation, so the rule A -> B is kept whatever its figures, provided the two were bought
  together in at least one basket (which every pair here was; a catalogue pair never
  bought together has no figures to rank it by and is left out).

  Cost: the self-join runs over one row per (order, product), producing sum over baskets
  of k*(k-1) rows (k = distinct products of the basket); baskets are small, so this is
  a small multiple of the number of order lines.

  Params: night (date), min_pairs (int), min_confidence (float), rule_id_offset (int:
  rule ids continue after those of the other kind, so both kinds share the table).
-#}
with basket_items as (
    -- one row per (basket, product): a product twice in one order is one occurrence
    select distinct
        items.order_id,
        items.product_id
    from stg_orders as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    where orders.status = 'placed'
      and items.quantity > items.returned_quantity
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

measured as (
    select
        pairs.antecedent_product_id,
        pairs.consequent_product_id,
        pairs.pairs,
        1.0 * pairs.pairs / basket_total.baskets as support,
        1.0 * pairs.pairs / pairs.antecedent_baskets as confidence,
        -- confidence / (baskets with B / baskets), as one division of exact counts
        (1.0 * pairs.pairs * basket_total.baskets)
            / (1.0 * pairs.antecedent_baskets * pairs.consequent_baskets) as lift,
        case when catalogue.accessory_for is not null then 1 else 0 end as is_catalogue_accessory
    from pairs
    cross join basket_total
    left join stg_products as catalogue
        on catalogue.product_id = pairs.consequent_product_id
        and catalogue.accessory_for = pairs.antecedent_product_id
),

kept as (
    select *
    from measured
    where (pairs >= :min_pairs and confidence >= :min_confidence and lift > 1)
       or is_catalogue_accessory = 1
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
