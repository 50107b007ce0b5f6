{#-
  occ_birthday: customers whose birthday is the night's date. 29 February birthdays are
  greeted on 28 February in non-leap years (the caller passes both month-days then).
  Unknown birthdays (null) never match.
  Params: birthday_md, birthday_md_leap ('MM-DD' strings).
-#}
with final as (
    select customer_id, 'birthday' as occasion
    from stg_customers
    where birthday is not null
      and {{ month_day("birthday") }} in (:birthday_md, :birthday_md_leap)
)

select * from final
