-- Run once by the postgres container on first start: the warehouse lives beside Airflow's metadata.
create database warehouse owner airflow;
