{#-
  churn_triples: the BG/NBD input, one row per distinct (frequency, recency, age) among the
  customers who have bought, with how many customers share it. In days, as of the night:
  frequency = order days after the first, recency = first to last order day, age = first
  order day to the night. The models fit on these rows, weighted: never on order lines.
  Params: window_end (naive UTC).
-#}
with buyers as (
    select
        order_days - 1 as frequency,
        {{ days_between("first_order_at", "last_order_at") }} as recency,
        {{ days_between("first_order_at", ts("window_end")) }} as age
    from customer_facts
    where orders > 0
      and first_order_at < {{ ts("window_end") }}
),

final as (
    select frequency, recency, age, count(*) as customers
    from buyers
    group by frequency, recency, age
)

-- A fixed row order: the fit sums in this order, so every run and dialect gives the same estimates.
select * from final
order by frequency, recency, age
