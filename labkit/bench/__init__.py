"""`labkit bench`: the OpenMessaging Benchmark method applied to the lab's three lanes.

Per lane, four layers measured in one run — the broker's own ceiling tool, the raw client,
the lab's transport with a no-op pipeline, the full booking pipeline — each as max-rate
throughput (median of repeated runs after a warm-up) and fixed-rate end-to-end latency
measured from the intended send time; plus a scaling curve over worker processes.
"""
