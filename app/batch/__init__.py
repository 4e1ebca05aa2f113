"""Scoring whole datasets with the same verified model artifacts as the server.

``core`` turns items into flat result rows through the model interface (bad items
become an error column, never a failed run); ``files`` reads folders of images and
CSV or Parquet tables and writes resumable output; ``spark`` wraps ``core`` in
Spark's predict_batch_udf for data that outgrows one machine.
"""
