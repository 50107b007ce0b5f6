{#-
  product_rules_category: "customers who bought in category CA later bought in category CB",
  as rules from each product of CA to the one product of CB that fits (kind = 'next_category').

  Why (issue #12): a purchase sequence often lives at the category level. Mower buyers
  later buy a chainsaw, but their demand is split over several chainsaw models, so every
  product-level rule (sql/marts/product_rules_sequence.sql) is weak and popular extras
  outrank them. Counted per category, the pattern is strong.

  Grain: one row per (antecedent product A, consequent product B) where A is a product of a
  category CA, the rule CA -> CB passes the thresholds, and B is CB's chosen product after
  CA; built over the whole history, every night. The figures are those of CA -> CB.

  Per customer only the FIRST purchase time in each category matters (kept lines of placed
  orders, as in the product rules); the pair (CA, CB) counts once per customer when the
  first purchase in CB came strictly after the first in CA (CA <> CB by construction).

      support    = customers with the pair / customers with any purchase
      confidence = customers with the pair / customers who bought in CA
      lift       = confidence / (customers who bought in CB / customers with any purchase)

  Kept: pairs >= min_pairs, confidence >= min_confidence and lift > 1.

  The product within CB: the one that the customers behind CA -> CB bought most often as
  their first purchase in CB (ties: the lowest product id). It is what people in this
  customer's situation actually chose, measured over the whole category pair, so it is
  as well supported as the category rule itself; "the most bought after their own
  product" would fall back to the thin per-product counts that made the category level
  necessary, and a price-range match would need a price model the data do not support
  for most customers (one or two orders). A customer who already has any product of CB
  gets no category suggestion into CB (sql/marts/recommendations.sql): they made that
  step already.

  Cost: one row per (customer, category) before the self-join, so customers x
  categories-per-customer^2 / 2 pair rows; then one row per (product of CA, rule of CA).

  With the flag from_counts (the nightly run), the pair, buyer, customer and first-choice counts
  are read from rule_category_pairs, rule_category_buyers, rule_totals and rule_category_choices,
  which retention/rule_counts.py keeps up to date night by night from the same definitions as
  the CTEs below (issue #15); without it they are counted here from the whole history.

  Params: night (date), min_pairs (int), min_confidence (float), rule_id_offset (int); with
  the flag before_cutoff, cutoff (timestamp): only orders before it (offline evaluation).
-#}
{% if from_counts | default(false) -%}
with pairs as (
    select
        counted.antecedent_category,
        counted.consequent_category,
        counted.pairs,
        antecedent.buyers as antecedent_buyers,
        consequent.buyers as consequent_buyers
    from rule_category_pairs as counted
    inner join rule_category_buyers as antecedent
        on antecedent.category = counted.antecedent_category
    inner join rule_category_buyers as consequent
        on consequent.category = counted.consequent_category
),

customer_total as (
    select total as customers
    from rule_totals
    where kind = 'next_category'
),
{%- else %}
with purchases as (
    select
        orders.customer_id,
        items.product_id,
        products.category,
        orders.ordered_at
    from stg_orders as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    inner join stg_products as products on products.product_id = items.product_id
    where orders.status = 'placed'
      and items.quantity > items.returned_quantity
      {{ before_cutoff_only() }}
),

first_in_category as (
    -- one row per (customer, category): what keeps the self-join small
    select customer_id, category, min(ordered_at) as first_at
    from purchases
    group by customer_id, category
),

category_buyers as (
    select category, count(*) as buyers
    from first_in_category
    group by category
),

with_buyers as (
    select
        first_in_category.customer_id,
        first_in_category.category,
        first_in_category.first_at,
        category_buyers.buyers
    from first_in_category
    inner join category_buyers on category_buyers.category = first_in_category.category
),

customer_total as (
    select count(distinct customer_id) as customers
    from first_in_category
),

customer_pairs as (
    -- one row per customer and category pair; `later_at` finds what they bought first in CB
    select
        earlier.customer_id,
        earlier.category as antecedent_category,
        later.category as consequent_category,
        later.first_at as later_at,
        earlier.buyers as antecedent_buyers,
        later.buyers as consequent_buyers
    from with_buyers as earlier
    inner join with_buyers as later
        on later.customer_id = earlier.customer_id
        and later.first_at > earlier.first_at
),

pairs as (
    select
        antecedent_category,
        consequent_category,
        count(*) as pairs,
        max(antecedent_buyers) as antecedent_buyers,
        max(consequent_buyers) as consequent_buyers
    from customer_pairs
    group by antecedent_category, consequent_category
),
{%- endif %}

measured as (
    select
        pairs.antecedent_category,
        pairs.consequent_category,
        pairs.pairs,
        1.0 * pairs.pairs / customer_total.customers as support,
        1.0 * pairs.pairs / pairs.antecedent_buyers as confidence,
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

{% if from_counts | default(false) -%}
first_choices as (
    -- per category pair (the kept ones are picked in expanded)
    select antecedent_category, consequent_category, product_id, choosers
    from rule_category_choices
),
{%- else %}
first_choices as (
    -- per kept category pair: the products its customers bought at their first purchase in CB
    select
        customer_pairs.antecedent_category,
        customer_pairs.consequent_category,
        purchases.product_id,
        count(distinct customer_pairs.customer_id) as choosers
    from customer_pairs
    inner join kept
        on kept.antecedent_category = customer_pairs.antecedent_category
        and kept.consequent_category = customer_pairs.consequent_category
    inner join purchases
        on purchases.customer_id = customer_pairs.customer_id
        and purchases.category = customer_pairs.consequent_category
        and purchases.ordered_at = customer_pairs.later_at
    group by customer_pairs.antecedent_category, customer_pairs.consequent_category, purchases.product_id
),
{%- endif %}

chosen as (
    select antecedent_category, consequent_category, product_id
    from (
        select
            *,
            row_number() over (
                partition by antecedent_category, consequent_category
                order by choosers desc, product_id
            ) as position
        from first_choices
    ) as ranked
    where position = 1
),

expanded as (
    -- the rule CA -> CB for every product of CA, pointing at CB's chosen product
    select
        antecedent.product_id as antecedent_product_id,
        chosen.product_id as consequent_product_id,
        kept.pairs,
        kept.support,
        kept.confidence,
        kept.lift
    from kept
    inner join chosen
        on chosen.antecedent_category = kept.antecedent_category
        and chosen.consequent_category = kept.consequent_category
    inner join stg_products as antecedent on antecedent.category = kept.antecedent_category
),

final as (
    select
        :rule_id_offset + row_number() over (
            order by antecedent_product_id, consequent_product_id
        ) as rule_id,
        'next_category' as kind,
        antecedent_product_id,
        consequent_product_id,
        round(support, 6) as support,
        round(confidence, 6) as confidence,
        round(lift, 4) as lift,
        pairs,
        {{ as_date("night") }} as night
    from expanded
)

select * from final
