{#-
  occ_birthday (candidates): customers whose birthday's month-day is one of the night's target
  dates' (the local dates the night prepares: D, and D+1 for zones far east of the shop; see
  README, "The night"), 29 February birthdays also on 28 February of non-leap years. The
  caller keeps those whose birthday falls on their own zone's target date. Unknown birthdays
  (null) never match.
  Params: md_0 .. md_<md_count - 1> ('MM-DD' strings). Flag: md_count.
-#}
with final as (
    select customer_id, 'birthday' as occasion, birthday
    from stg_customers
    where birthday is not null
      and {{ month_day("birthday") }} in ({{ bound_list("md", md_count) }})
)

select * from final
