"""MLflow as the system of record: reaching the tracking and artifact stores (``store``), a run's
lifecycle, params, metrics, tags and artifacts (``tracker``), the parent run of a sweep or study
(``parents``), Hugging Face model folders as MLflow pyfunc models (``mlflow_model``) and how a run
looks in the MLflow UI (``run_record``). mlflow itself is imported lazily."""
