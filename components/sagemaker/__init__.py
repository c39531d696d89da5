"""The SageMaker target: KFP v2 components of ours that tune, train (and deploy) on Amazon SageMaker with boto3.

`pipelines.targets` swaps them in for the kfp target's tune, train and deploy steps at compile time; every
other step stays the same component.  The modules:

- `settings`: the profile's ``sagemaker:`` section (pydantic), carried to the steps' pods as one variable;
- `limits`: the limits botocore's validation leaves out (maximums, enums, patterns), checked before a call;
- `requests`: the request bodies (CreateTrainingJob, CreateHyperParameterTuningJob) from the settings,
  the training options and the tuning spec — pure, no boto3;
- `tuning`: the tuning spec in SageMaker's words (strategy, ranges, early stopping) and trials back into
  the engine-neutral `components.tune.results.StudyResult`;
- `aws`: the boto3 clients (the only module that imports boto3);
- `channels`: the train and validation splits from Feast to S3 (Parquet), and the model back from S3;
- `jobs`: create, wait for (backoff, timeout, CloudWatch logs, status transitions) and stop jobs;
- `train`, `tune`: the KFP components;
- `endpoint`: the endpoint's names, checks, request bodies and decisions (create, canary update, no-op;
  success or SageMaker's rollback) — pure, no boto3; `endpoint_client`: its calls (create or update, wait,
  smoke-test through InvokeEndpoint, roll back); `endpoint_step`: the deploy step with MLflow's champion;
  `deploy`: its KFP component.
"""
