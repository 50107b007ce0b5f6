{#-
  occ_win_back: customers who entered the dissolution phase tonight: dissolution in
  tonight's snapshot and not in the latest earlier one (once per entry). Without an
  earlier snapshot nobody is known to have *entered*, so nobody is selected.
  Params: night.
-#}
with previous_night as (
    select max(night) as night
    from segment_snapshots
    where night < {{ as_date("night") }}
),

final as (
    select
        tonight.customer_id,
        'win_back' as occasion,
        tonight.recency_days
    from segment_snapshots as tonight
    inner join previous_night on 1 = 1
    inner join segment_snapshots as before
        on before.customer_id = tonight.customer_id
        and before.night = previous_night.night
    where tonight.night = {{ as_date("night") }}
      and tonight.lifecycle_phase = 'dissolution'
      and before.lifecycle_phase <> 'dissolution'
)

select * from final
