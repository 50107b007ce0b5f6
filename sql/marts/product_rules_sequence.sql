{#-
  product_rules_sequence: "customers who bought A later bought B" (kind = 'next_purchase').

  Grain: one row per (antecedent A, consequent B) that passes the thresholds; built over
  the whole history of all customers, every night.

  A purchase is a kept line (quantity > returned_quantity) of a placed order: cancelled
  orders and fully returned lines say nothing about what a customer wanted. Per customer
  only the FIRST purchase time of each product matters; the pair (A, B) counts once per
  customer when B was first bought strictly after A was first bought (so in a later
  order; two products of one order, or of orders at the same instant, make no sequence).

      support    = customers with the pair / customers with any purchase
      confidence = customers with the pair / customers who bought A
      lift       = confidence / (customers who bought B / customers with any purchase)

  The confidence denominator is the standard one, all buyers of A, including those who
  bought A recently and have had no time for a next order yet: it slightly understates
  the rules of products that sold mostly lately, and never overstates any.

  Kept: pairs >= min_pairs, confidence >= min_confidence and lift > 1; A <> B.

  Cost: the pair self-join runs over one row per (customer, product), not over order
  lines, so it produces sum over customers of k*(k-1)/2 rows (k = distinct products of
  the customer), i.e. customers x products-per-customer^2 / 2; repeat purchases of the
  same product and the number of orders do not add to it.

  With the flag from_counts (the nightly run), the pair, buyer and customer counts are read
  from rule_pair_counts, rule_item_counts and rule_totals, which retention/rule_counts.py keeps
  up to date night by night from the same definitions as the CTEs below (issue #15); without
  it they are counted here from the whole history (full rebuild checks, offline evaluation).

  Params: night (date), min_pairs (int), min_confidence (float), rule_id_offset (int:
  rule ids continue after those of the other kind, so both kinds share the table); with the
  flag before_cutoff, cutoff (timestamp): only orders before it (offline evaluation).
-#}
{% if from_counts | default(false) -%}
with pairs as (
    {{ counted_pairs("next_purchase", "buyers") }}
),

customer_total as (
    select total as customers
    from rule_totals
    where kind = 'next_purchase'
),
{%- else %}
with purchases as (
    select
        orders.customer_id,
        items.product_id,
        orders.ordered_at
    from stg_orders as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    where orders.status = 'placed'
      and items.quantity > items.returned_quantity
      {{ before_cutoff_only() }}
),

first_purchases as (
    -- one row per (customer, product): what keeps the self-join small
    select customer_id, product_id, min(ordered_at) as first_at
    from purchases
    group by customer_id, product_id
),

product_buyers as (
    select product_id, count(*) as buyers
    from first_purchases
    group by product_id
),

with_buyers as (
    -- each row carries its product's buyer count, so that the pairs need no join back to
    -- per-product counts (which PostgreSQL misestimated into a product x product cross join)
    select
        first_purchases.customer_id,
        first_purchases.product_id,
        first_purchases.first_at,
        product_buyers.buyers
    from first_purchases
    inner join product_buyers on product_buyers.product_id = first_purchases.product_id
),

customer_total as (
    select count(distinct customer_id) as customers
    from first_purchases
),

pairs as (
    select
        earlier.product_id as antecedent_product_id,
        later.product_id as consequent_product_id,
        count(*) as pairs,
        max(earlier.buyers) as antecedent_buyers,
        max(later.buyers) as consequent_buyers
    from with_buyers as earlier
    inner join with_buyers as later
        on later.customer_id = earlier.customer_id
        and later.first_at > earlier.first_at
    -- strictly later first purchase implies a different product, so A <> B holds by construction
    group by earlier.product_id, later.product_id
),
{%- endif %}

measured as (
    select
        pairs.antecedent_product_id,
        pairs.consequent_product_id,
        pairs.pairs,
        1.0 * pairs.pairs / customer_total.customers as support,
        1.0 * pairs.pairs / pairs.antecedent_buyers as confidence,
        -- confidence / (buyers of B / customers), as one division of exact counts
        (
            (1.0 * pairs.pairs * customer_total.customers)
            / (1.0 * pairs.antecedent_buyers * pairs.consequent_buyers)
        ) as lift
    from pairs
    cross join customer_total
),

kept as (
    select *
    from measured
    where pairs >= :min_pairs
      and confidence >= :min_confidence
      and lift > 1
),

final as (
    select
        :rule_id_offset + row_number() over (
            order by antecedent_product_id, consequent_product_id
        ) as rule_id,
        'next_purchase' as kind,
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
