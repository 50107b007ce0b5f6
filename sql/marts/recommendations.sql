{#-
  recommendations: the top_n products per customer and rule kind, from product_rules.

  Grain: customer x kind x rank (1 = best), ranks 1..top_n without gaps.

  A customer's antecedents are the products of their kept lines in placed orders (what
  they bought and kept). Candidates are the consequents of rules on those antecedents,
  minus every product the customer already has: any product of a placed order, kept or
  returned (a product sent back is no better a suggestion than one kept). Rules whose
  products are missing from stg_products are skipped, so the message can name both.

  score = confidence x lift of the best rule leading to the product (= P(B|A)^2 / P(B):
  likely and specific beats merely popular), rounded to 6 decimals before ranking so
  that both databases rank the same numbers. The best rule is the one with the highest
  score, then confidence, then the smallest antecedent id; its antecedent is the
  because_product_id. Ranking: score desc, then product_id asc.

  explanation: one English sentence quoting both product names and the confidence as a
  whole percentage (the rendering layer translates).

  Incremental: only the customers in changed_customers for the night are recomputed
  (the caller deletes the same scope); unchanged customers keep last night's rows.
  Params: night (date), top_n (int).
-#}
with bought as (
    -- the antecedents: products of kept lines in placed orders
    select distinct orders.customer_id, items.product_id
    from stg_orders as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    where orders.status = 'placed'
      and items.quantity > items.returned_quantity
      {{ changed_only("orders.customer_id") }}
),

owned as (
    -- never suggested again: products of any line of a placed order, returned or not
    select distinct orders.customer_id, items.product_id
    from stg_orders as orders
    inner join stg_order_items as items on items.order_id = orders.order_id
    where orders.status = 'placed' {{ changed_only("orders.customer_id") }}
),

candidates as (
    select
        bought.customer_id,
        rules.kind,
        rules.consequent_product_id as product_id,
        rules.antecedent_product_id as because_product_id,
        rules.confidence,
        round(rules.confidence * rules.lift, 6) as score
    from bought
    inner join product_rules as rules on rules.antecedent_product_id = bought.product_id
    -- both products must be in the catalogue for the explanation to name them
    inner join stg_products as antecedent on antecedent.product_id = rules.antecedent_product_id
    inner join stg_products as consequent on consequent.product_id = rules.consequent_product_id
    left join owned as already
        on already.customer_id = bought.customer_id
        and already.product_id = rules.consequent_product_id
    where already.customer_id is null
),

best_reason as (
    select
        customer_id,
        kind,
        product_id,
        because_product_id,
        confidence,
        score,
        row_number() over (
            partition by customer_id, kind, product_id
            order by score desc, confidence desc, because_product_id
        ) as reason_position
    from candidates
),

ranked as (
    select
        customer_id,
        kind,
        product_id,
        because_product_id,
        confidence,
        score,
        row_number() over (partition by customer_id, kind order by score desc, product_id) as position
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
        case ranked.kind
            when 'next_purchase' then
                'Customers who bought ' || antecedent.name || ' often buy ' || consequent.name
                || ' next (' || cast(cast(round(ranked.confidence * 100 + 0.000001) as integer) as text)
                || ' % of them).'
            else
                'Orders with ' || antecedent.name || ' often include ' || consequent.name
                || ' too (' || cast(cast(round(ranked.confidence * 100 + 0.000001) as integer) as text)
                || ' % of them).'
        end as explanation,
        {{ as_date("night") }} as night
    from ranked
    inner join stg_products as antecedent on antecedent.product_id = ranked.because_product_id
    inner join stg_products as consequent on consequent.product_id = ranked.product_id
    where ranked.position <= :top_n
)

select * from final
