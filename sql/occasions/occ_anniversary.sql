{#-
  occ_anniversary (candidates): customers whose first order's UTC month-day is one a first
  order with its local anniversary tonight can have, placed at least a year before. A local
  date is at most a day away from the UTC date, and the caller computes that day either side
  in both a leap and a non-leap calendar (the first order's year need not be the night's), so
  this prefilter never drops a customer. The caller keeps those whose first order's *local*
  date (the customer's time zone) has its N-th anniversary tonight, with 29 February falling
  on 28 February in non-leap years.
  With several target dates (zones far east of the shop get the next day's), the month-days
  of all of them.
  Params: window_start, md_0 .. md_<md_count - 1> ('MM-DD'). Flag: md_count.
-#}
with final as (
    select
        facts.customer_id,
        'anniversary' as occasion,
        facts.first_order_id as order_id,
        facts.first_order_at
    from customer_facts as facts
    where facts.first_order_at < {{ ts("window_start") }}
      and {{ month_day("facts.first_order_at") }} in ({{ bound_list("md", md_count) }})
)

select * from final
