{#-
  occ_new_stock: A customers (tonight's snapshot) whose preferred category received new
  products in the night's window (product created_at inside it). product_ids lists up to
  three of them, newest first, comma-separated.
  Params: night, window_start, window_end.
-#}
with new_products as (
    select
        product_id,
        category,
        row_number() over (partition by category order by created_at desc, product_id) as position
    from stg_products
    where created_at >= {{ ts("window_start") }}
      and created_at < {{ ts("window_end") }}
),

final as (
    select
        facts.customer_id,
        'new_stock' as occasion,
        facts.preferred_category as category,
        min(case when new_products.position = 1 then new_products.product_id end) as product_1,
        min(case when new_products.position = 2 then new_products.product_id end) as product_2,
        min(case when new_products.position = 3 then new_products.product_id end) as product_3
    from customer_facts as facts
    inner join segment_snapshots as snap
        on snap.customer_id = facts.customer_id
        and snap.night = {{ as_date("night") }}
        and snap.abc_class = 'A'
    inner join new_products on new_products.category = facts.preferred_category
    group by facts.customer_id, facts.preferred_category
)

select * from final
