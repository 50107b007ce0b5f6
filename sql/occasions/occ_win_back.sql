{#-
  occ_win_back: customers who entered the dissolution phase tonight: dissolution in
  tonight's snapshot and not in the latest earlier one that still exists. Without an
  earlier snapshot nobody is known to have *entered*, so nobody is selected.

  Once per entry, whatever the gap between runs: the snapshots that proved an earlier
  entry may have been pruned (RETENTION_SNAPSHOT_DAYS), leaving only an older one from
  before that entry. So the occasions table's own record decides too: a win_back
  recorded on an earlier night since the customer's last order (in any status) means
  this entry was already decided, and it is not decided again.

  "Since the last order", in whole days: the last order's UTC date is L = date(window_end)
  - recency_days; an earlier win_back night W belongs to this silent stretch exactly when
  W >= L + 2. Why exact: a win_back on W needs recency > dissolution_min_days >= 1 on W,
  so an order known on W lies at least 2 days before W; and an order on L <= W - 2 was
  placed before W's window ended (local midnight of W is never before W-1 10:00 UTC).
  Only earlier nights count, so a re-run of a night decides it the same way again.
  Params: night, window_end.
-#}
with previous_night as (
    select max(night) as night
    from segment_snapshots
    where night < {{ as_date("night") }}
),

greeted_this_stretch as (
    select distinct earlier.customer_id
    from occasions as earlier
    inner join segment_snapshots as tonight
        on tonight.customer_id = earlier.customer_id
        and tonight.night = {{ as_date("night") }}
    where earlier.occasion = 'win_back'
      and earlier.night < {{ as_date("night") }}
      and {{ days_between("earlier.night", ts("window_end")) }} <= tonight.recency_days - 2
),

final as (
    select
        tonight.customer_id,
        'win_back' as occasion,
        tonight.recency_days
    from segment_snapshots as tonight
    inner join previous_night on 1 = 1
    inner join segment_snapshots as previous
        on previous.customer_id = tonight.customer_id
        and previous.night = previous_night.night
    where tonight.night = {{ as_date("night") }}
      and tonight.lifecycle_phase = 'dissolution'
      and previous.lifecycle_phase <> 'dissolution'
      and not exists (
          select 1 from greeted_this_stretch
          where greeted_this_stretch.customer_id = tonight.customer_id
      )
)

select * from final
