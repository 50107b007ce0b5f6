{#-
  occ_anniversary (candidates): customers whose first order's UTC month-day lies within a
  day of the night's date, placed at least a year before. The caller keeps those whose
  first order's *local* date (the customer's time zone) has its N-th anniversary tonight,
  with 29 February falling on 28 February in non-leap years.
  Params: window_start, md_before, md_on, md_after, md_leap ('MM-DD').
-#}
with final as (
    select
        facts.customer_id,
        'anniversary' as occasion,
        facts.first_order_id as order_id,
        facts.first_order_at
    from customer_facts as facts
    where facts.first_order_at < {{ ts("window_start") }}
      and {{ month_day("facts.first_order_at") }} in (:md_before, :md_on, :md_after, :md_leap)
)

select * from final
