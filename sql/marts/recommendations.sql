{#-
  recommendations: the top_n products per customer and kind, from product_rules.

  Grain: customer x kind x rank (1 = best), ranks 1..top_n without gaps. Kinds are those of
  the occasions: 'next_purchase' (from the rule kinds 'next_purchase', product sequences,
  and 'next_category', category sequences) and 'accessory' (rule kind 'accessory').

  A customer's antecedents are the products of their kept lines in placed orders (what
  they bought and kept). Candidates are the consequents of rules on those antecedents,
  minus every product the customer already has: any product of a placed order, kept or
  returned (a product sent back is no better a suggestion than one kept). A category rule
  into CB is skipped for a customer who has any product of CB already (they took that step).
  Rules whose products are missing from stg_products are skipped, so the message can name
  both.

  score = confidence x lift of the rule (= P(B|A)^2 / P(B): likely and specific beats
  merely popular), rounded to 6 decimals before ranking so that both databases rank the
  same numbers. A product-level and a category-level rule compete on the same score: the
  product-level one wins where it is the stronger.

  Order (issue #12), for the best reason of each product and for the ranking:
    1. rules from a product of the customer's last order (the latest placed order)
       first: the follow-up messages of an order must follow from that order;
    2. catalogue accessories (B.accessory_for = A) before every basket rule;
    3. score desc; then, for the reason, confidence desc, the smallest antecedent id and
       the product-level rule before the category one; for the rank, product_id asc.
  The best reason's antecedent is because_product_id.

  explanation: one English sentence with the names and the share, for people reading the
  table (the messages word it themselves, in the customer's language, from the figures).

  Incremental: only the customers in changed_customers for the night are recomputed
  (the caller deletes the same scope); unchanged customers keep last night's rows.
  Params: night (date), top_n (int); with the flag before_cutoff, cutoff (timestamp): the
  history before it only (retention/evaluate.py, inside a transaction it rolls back).
-#}
{#- A share as a whole percentage in text (the 1e-6 keeps x.5 from rounding down in floats). -#}
{% macro percent(share) -%}
cast(cast(round({{ share }} * 100 + 0.000001) as integer) as text)
{%- endmacro %}
{#- PostgreSQL computes `placed` once when it is read more than once. Incremental: the changed
    customers' orders, found through the index, instead of a scan of every order for each of the
    three readers (0.25 of 1.0 s at 100k customers). A full rebuild keeps it inlined: all orders,
    read in place. -#}
with placed as {{ inlined_if(not incremental) }} (
    -- the placed orders of the customers in scope (tonight's changed ones, or everyone)
    select orders.order_id, orders.customer_id, orders.ordered_at
    from stg_orders as orders
    where orders.status = 'placed' {{ changed_only("orders.customer_id") }} {{ before_cutoff_only() }}
),

bought as (
    -- the antecedents: products of kept lines in placed orders
    select distinct orders.customer_id, items.product_id
    from placed as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    where items.quantity > items.returned_quantity
),

last_orders as (
    -- as customer_facts.last_order_at, also before a cut-off
    select orders.customer_id, max(orders.ordered_at) as last_order_at
    from placed as orders
    group by orders.customer_id
),

last_order_products as (
    -- the kept products of the customer's last order (all orders at that instant)
    select distinct orders.customer_id, items.product_id
    from placed as orders
    inner join last_orders
        on last_orders.customer_id = orders.customer_id
        and last_orders.last_order_at = orders.ordered_at
    inner join stg_order_items as items on items.order_id = orders.order_id
    where items.quantity > items.returned_quantity
),

antecedents as (
    select
        bought.customer_id,
        bought.product_id,
        case when last_order.customer_id is null then 0 else 1 end as from_last_order
    from bought
    left join last_order_products as last_order
        on last_order.customer_id = bought.customer_id
        and last_order.product_id = bought.product_id
),

owned as (
    -- never suggested again: products of any line of a placed order, returned or not
    select distinct orders.customer_id, items.product_id
    from placed as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
),

owned_categories as (
    select distinct owned.customer_id, products.category
    from owned
    inner join stg_products as products on products.product_id = owned.product_id
),

candidates as (
    select
        antecedents.customer_id,
        case when rules.kind = 'accessory' then 'accessory' else 'next_purchase' end as kind,
        rules.kind as rule_kind,
        rules.consequent_product_id as product_id,
        rules.antecedent_product_id as because_product_id,
        rules.confidence,
        round(rules.confidence * rules.lift, 6) as score,
        antecedents.from_last_order,
        case
            when rules.kind = 'accessory' and consequent.accessory_for = rules.antecedent_product_id then 1
            else 0
        end as is_catalogue
    from antecedents
    inner join product_rules as rules on rules.antecedent_product_id = antecedents.product_id
    -- both products must be in the catalogue for the explanation to name them
    inner join stg_products as antecedent on antecedent.product_id = rules.antecedent_product_id
    inner join stg_products as consequent on consequent.product_id = rules.consequent_product_id
    left join owned as already
        on already.customer_id = antecedents.customer_id
        and already.product_id = rules.consequent_product_id
    left join owned_categories as has_category
        on rules.kind = 'next_category'
        and has_category.customer_id = antecedents.customer_id
        and has_category.category = consequent.category
    where already.customer_id is null
      and has_category.customer_id is null
),

best_reason as (
    select
        *,
        row_number() over (
            partition by customer_id, kind, product_id
            order by
                from_last_order desc, is_catalogue desc, score desc, confidence desc,
                because_product_id, rule_kind desc
        ) as reason_position
    from candidates
),

ranked as (
    select
        customer_id,
        kind,
        rule_kind,
        product_id,
        because_product_id,
        confidence,
        score,
        is_catalogue,
        row_number() over (
            partition by customer_id, kind
            order by from_last_order desc, is_catalogue desc, score desc, product_id
        ) as position
    from best_reason
    where reason_position = 1
),

final as (
    select
        ranked.customer_id,
        ranked.kind,
        ranked.position as rank,
        ranked.product_id,
        ranked.because_product_id,
        ranked.score,
        case
            when ranked.rule_kind = 'next_category'
                then 'Customers who bought from ' || antecedent.category || ' often buy from '
                || consequent.category || ' next (' || {{ percent("ranked.confidence") }}
                || ' % of them); ' || consequent.name || ' is their most frequent choice.'
            when ranked.kind = 'next_purchase'
                then 'Customers who bought ' || antecedent.name || ' often buy ' || consequent.name
                || ' next (' || {{ percent("ranked.confidence") }} || ' % of them).'
            when ranked.is_catalogue = 1
                then consequent.name || ' is made for ' || antecedent.name || '; '
                || {{ percent("ranked.confidence") }} || ' % of orders with ' || antecedent.name
                || ' include it.'
            else
                'Orders with ' || antecedent.name || ' often include ' || consequent.name
                || ' too (' || {{ percent("ranked.confidence") }} || ' % of them).'
        end as explanation,
        {{ as_date("night") }} as night
    from ranked
    inner join stg_products as antecedent on antecedent.product_id = ranked.because_product_id
    inner join stg_products as consequent on consequent.product_id = ranked.product_id
    where ranked.position <= :top_n
)

select * from final
