{#-
  segment_snapshots: one row per customer for the night, every customer, as of the night.

  Scores that need global ranks (RFM quintiles, ABC shares) are computed over the one-row-
  per-customer facts, never over order lines. Churn figures come from `churn_scores`, one row
  per distinct (repeat days, recency, age) triple, filled by the churn stage just before.
  The rules are explained for marketers in the README, section "Segments".
  Params: night (date), window_end (naive UTC), the thresholds named in the CTEs.
-#}
with facts as (
    select
        customer_id,
        orders,
        order_days,
        revenue,
        revenue_12m,
        margin_12m,
        orders_12m,
        repeat_avg_order_value,
        usual_gap_days,
        case when orders > 0 then {{ days_between("last_order_at", ts("window_end")) }} end as recency_days,
        case when orders > 0 then {{ days_between("first_order_at", ts("window_end")) }} end as tenure_days,
        case when orders > 0 then {{ days_between("first_order_at", "last_order_at") }} end as active_days
    from customer_facts
),

buyers as (
    select * from facts
    where orders > 0
),

-- Quintile scores: equal values share a score (the lowest of their run), so ties are
-- deterministic and fair; 5 is best (most recent, most frequent, highest spend).
ranked as (
    select
        customer_id,
        rank() over (order by recency_days desc) as r_rank,
        rank() over (order by orders) as f_rank,
        rank() over (order by revenue) as m_rank,
        count(*) over () as buyers
    from buyers
),

scores as (
    select
        customer_id,
        1 + (5 * (r_rank - 1)) / buyers as r_score,
        1 + (5 * (f_rank - 1)) / buyers as f_score,
        1 + (5 * (m_rank - 1)) / buyers as m_score
    from ranked
),

-- ABC: customers sorted by trailing-year revenue; A make up the first `abc_a_share` of it,
-- B the next `abc_b_share`, C the rest (and everyone without revenue in the year).
revenue_ranks as (
    select
        customer_id,
        revenue_12m,
        (
            sum(revenue_12m) over (order by revenue_12m desc, customer_id rows unbounded preceding)
            - revenue_12m
        ) as revenue_before,
        sum(revenue_12m) over () as revenue_total
    from facts
),

abc as (
    select
        customer_id,
        case
            when revenue_12m <= 0 then 'C'
            when revenue_before < :abc_a_share * revenue_total then 'A'
            when revenue_before < :abc_ab_share * revenue_total then 'B'
            else 'C'
        end as abc_class
    from revenue_ranks
),

final as (
    select
        {{ as_date("night") }} as night,
        facts.customer_id,
        facts.recency_days,
        facts.tenure_days,
        facts.orders as frequency,
        facts.revenue as monetary,
        scores.r_score,
        scores.f_score,
        scores.m_score,
        case
            when facts.orders = 0 then 'prospect'
            when scores.r_score = 5 and facts.orders = 1 then 'new'
            when scores.r_score >= 4 and (scores.f_score + scores.m_score) / 2 >= 4 then 'champions'
            when scores.r_score = 1 and (scores.f_score + scores.m_score) / 2 >= 4 then 'cannot_lose'
            when scores.r_score <= 2 and (scores.f_score + scores.m_score) / 2 >= 3 then 'at_risk'
            when scores.r_score >= 3 and (scores.f_score + scores.m_score) / 2 >= 3 then 'loyal'
            when scores.r_score >= 4 and (scores.f_score + scores.m_score) / 2 = 2 then 'potential_loyalist'
            when scores.r_score >= 4 then 'promising'
            when scores.r_score = 3 and (scores.f_score + scores.m_score) / 2 = 2 then 'need_attention'
            when scores.r_score = 3 then 'about_to_sleep'
            when scores.r_score = 2 then 'hibernating'
            else 'lost'
        end as rfm_segment,
        abc.abc_class,
        case
            when facts.orders = 0 then 'awareness'
            when facts.recency_days > :dissolution_min_days
                and facts.recency_days > (
                    :dissolution_factor * coalesce(facts.usual_gap_days, :default_gap_days)
                )
                then 'dissolution'
            when facts.orders >= :commitment_min_orders
                and facts.active_days >= :commitment_min_days
                and facts.orders_12m >= :commitment_min_orders_12m
                then 'commitment'
            when facts.orders <= :exploration_max_orders then 'exploration'
            else 'expansion'
        end as lifecycle_phase,
        churn.p_alive,
        churn.expected_purchases_90d,
        -- Gamma-Gamma: E(M | x, m_x) = p (v + x m_x) / (p x + q - 1), the customer's own
        -- mean of x repeat transactions (order days after the first, as fitted in
        -- marts/churn_spend) shrunk towards the population mean p v / (q - 1) the fewer they
        -- have (p, q, v fitted tonight). With one order day (x = 0) the customer has no repeat
        -- mean (NULL) and gets the population mean: the coalesce only keeps NULL * 0 from
        -- making it NULL. NULL when Gamma-Gamma was not fitted tonight (its parameters are NULL).
        case
            when facts.orders > 0
                then :gg_p * (:gg_v + (facts.order_days - 1) * coalesce(facts.repeat_avg_order_value, 0))
                / (:gg_p * (facts.order_days - 1) + :gg_q - 1)
        end as expected_order_value_raw,
        facts.margin_12m,
        :service_cost_per_order * facts.orders_12m as service_cost_12m,
        churn.discounted_purchases_12m
    from facts
    inner join abc on abc.customer_id = facts.customer_id
    left join scores on scores.customer_id = facts.customer_id
    left join churn_scores as churn
        on churn.frequency = facts.order_days - 1
        and churn.recency = facts.active_days
        and churn.age = facts.tenure_days
    -- expected_order_value_raw is read five times below: at 1M customers computing it (numeric
    -- division) each time cost 3.2 of the query's 13 s
    {{ computed_once() }}
),

-- Churn figures are NULL where tonight's fits gave none (no churn_scores row, Gamma-Gamma not
-- fitted) and where a value would not fit its money column (`max_money`); the segments stage
-- counts those and records why. Nothing else in the snapshot depends on them.
valued as (
    select
        *,
        case
            when expected_order_value_raw >= 0 and expected_order_value_raw < :max_money
                then round(expected_order_value_raw, 2)
        end as expected_order_value
    from final
    {{ computed_once() }}
)

select
    night,
    customer_id,
    recency_days,
    tenure_days,
    frequency,
    monetary,
    r_score,
    f_score,
    m_score,
    rfm_segment,
    abc_class,
    lifecycle_phase,
    p_alive,
    expected_purchases_90d,
    expected_order_value,
    case
        when discounted_purchases_12m * expected_order_value < :max_money
            then round(discounted_purchases_12m * expected_order_value, 2)
    end as clv_12m,
    round(service_cost_12m, 2) as service_cost_12m,
    round(margin_12m - service_cost_12m, 2) as profit_12m,
    (margin_12m - service_cost_12m < 0) as unprofitable
from valued
