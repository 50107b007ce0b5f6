{#-
  churn_spend: the Gamma-Gamma input, one row per distinct (repeat order days, average order
  value) among customers with repeat order days who kept something, with their count.
  (The average covers all their orders, the first included: an approximation of the model's
  mean repeat spend that the facts can give without a second pass over order lines.)
-#}
with final as (
    select order_days - 1 as frequency, round(avg_order_value, 2) as monetary, count(*) as customers
    from customer_facts
    where order_days > 1
      and avg_order_value > 0
    group by order_days - 1, round(avg_order_value, 2)
)

-- A fixed row order: the fit sums in this order, so every run and dialect gives the same estimates.
select * from final
order by frequency, monetary
