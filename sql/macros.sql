{#-
  Dialect differences live here, as named macros, and nowhere else.
  Every model is rendered with `dialect` set to "sqlite" or "postgresql".
-#}

{#- Whole days from `start` to `end` (both timestamps or dates). -#}
{% macro days_between(start, end) -%}
{%- if dialect == "postgresql" -%}
(cast({{ end }} as date) - cast({{ start }} as date))
{%- else -%}
cast(julianday(date({{ end }})) - julianday(date({{ start }})) as integer)
{%- endif -%}
{%- endmacro %}

{#- The calendar day (UTC) of a timestamp, comparable and countable in both databases. -#}
{% macro day_of(column) -%}
{%- if dialect == "postgresql" -%}cast({{ column }} as date){%- else -%}date({{ column }}){%- endif -%}
{%- endmacro %}

{#- A bound parameter used as a timestamp, typed so both databases compare it correctly. -#}
{% macro ts(param) -%}
{%- if dialect == "postgresql" -%}cast(:{{ param }} as timestamp){%- else -%}:{{ param }}{%- endif -%}
{%- endmacro %}

{#- A bound parameter used as a date. -#}
{% macro as_date(param) -%}
{%- if dialect == "postgresql" -%}cast(:{{ param }} as date){%- else -%}:{{ param }}{%- endif -%}
{%- endmacro %}

{#- Ends a subquery whose computed columns are read more than once further on: PostgreSQL would
    pull the subquery up and compute each expression again wherever it is named (`offset 0`
    keeps it a subquery, computed once a row, without materialising it). SQLite as it is. -#}
{% macro computed_once() -%}
{%- if dialect == "postgresql" -%}offset 0{%- endif -%}
{%- endmacro %}

{#- A CTE read several times that PostgreSQL should read in place, inlined into each reader,
    where `inline` holds (it computes such a CTE once by default); SQLite as it is. -#}
{% macro inlined_if(inline) -%}
{%- if dialect == "postgresql" and inline -%}not materialized{%- endif -%}
{%- endmacro %}

{#- Money summed as whole cents, and back. Inputs have at most two decimals (Money, checked by the
    extract), so on PostgreSQL an amount times 100 is an integer and sums of bigint are exact, as
    the numeric sums were, and cheaper: at 1M customers the facts' numeric sums of 10.6M lines needed
    about 2 KB of hash table per customer and spilled to disk (issue 15). SQLite keeps its
    amounts as they are (a float times 100 is not always a whole number there). -#}
{% macro cents(amount) -%}
{%- if dialect == "postgresql" -%}cast(({{ amount }}) * 100 as bigint){%- else -%}{{ amount }}{%- endif -%}
{%- endmacro %}

{% macro from_cents(cents) -%}
{%- if dialect == "postgresql" -%}({{ cents }}) / 100.0{%- else -%}{{ cents }}{%- endif -%}
{%- endmacro %}

{#- Restrict a model to the customers changed in this night, unless it is a full rebuild. -#}
{% macro changed_only(column) -%}
{%- if incremental -%}
and {{ column }} in (select customer_id from changed_customers where night = {{ as_date("night") }})
{%- endif -%}
{%- endmacro %}

{#- Restrict a model to orders placed before `cutoff` when the flag before_cutoff is set (offline
    evaluation: retention/evaluate.py); the orders table must be aliased `orders`. -#}
{% macro before_cutoff_only() -%}
{%- if before_cutoff | default(false) -%}and orders.ordered_at < {{ ts("cutoff") }}{%- endif -%}
{%- endmacro %}

{#- Month and day of a date or timestamp as 'MM-DD' (birthdays, anniversaries). -#}
{% macro month_day(column) -%}
{%- if dialect == "postgresql" -%}to_char({{ column }}, 'MM-DD'){%- else -%}strftime('%m-%d', {{ column }}){%- endif -%}
{%- endmacro %}

{#- Placeholders `:name_0, :name_1, ...` for a list of `count` bound values (values stay bound). -#}
{% macro bound_list(name, count) -%}
{%- for i in range(count) -%}:{{ name }}_{{ i }}{% if not loop.last %}, {% endif %}{%- endfor -%}
{%- endmacro %}

{#- Year and month of a date or timestamp as 'YYYY-MM' (reports by month). -#}
{% macro year_month(column) -%}
{%- if dialect == "postgresql" -%}to_char({{ column }}, 'YYYY-MM'){%- else -%}strftime('%Y-%m', {{ column }}){%- endif -%}
{%- endmacro %}

{#- The kept pair counts of one product-level rule kind (retention/rule_counts.py), with each
    side's count of holders (buyers or baskets) named `antecedent_<holders>` and
    `consequent_<holders>`: the `pairs` CTE of a model run with the flag from_counts. -#}
{% macro counted_pairs(kind, holders) -%}
select
    counted.antecedent_product_id,
    counted.consequent_product_id,
    counted.pairs,
    antecedent.holders as antecedent_{{ holders }},
    consequent.holders as consequent_{{ holders }}
from rule_pair_counts as counted
inner join rule_item_counts as antecedent
    on antecedent.kind = counted.kind
    and antecedent.product_id = counted.antecedent_product_id
inner join rule_item_counts as consequent
    on consequent.kind = counted.kind
    and consequent.product_id = counted.consequent_product_id
where counted.kind = '{{ kind }}'
{%- endmacro %}
