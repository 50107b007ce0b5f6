{#-
  churn_spend: the Gamma-Gamma input, one row per distinct (repeat transactions, mean repeat
  spend) among customers with repeat transactions who kept something, with their count.

  A transaction is an order day (UTC), as for BG/NBD: frequency = order_days - 1. The model's
  monetary value is the mean spend of the REPEAT transactions (Fader, Hardie & Lee 2005,
  "RFM and CLV"), so the first order day is left out (issue #12: in the demo, first orders
  average about twice the repeat ones, which overstated expected order values and CLV):

      monetary = kept revenue of the order days after the first / (order_days - 1)

  That is customer_facts.repeat_avg_order_value (sql/marts/customer_facts.sql), which
  segment_snapshots uses for each customer's expected order value too: the fit and the
  per-customer figure read one definition. Customers whose repeat days kept nothing
  (monetary 0) are left out: the model needs a positive mean.
-#}
with repeat_spend as (
    select order_days - 1 as frequency, repeat_avg_order_value as monetary
    from customer_facts
    where order_days > 1
      and repeat_avg_order_value > 0
),

final as (
    select frequency, monetary, count(*) as customers
    from repeat_spend
    group by frequency, monetary
)

-- A fixed row order: the fit sums in this order, so every run and dialect gives the same estimates.
select * from final
order by frequency, monetary
