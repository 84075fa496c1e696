"""The open-loop load engine (`testbed load`): Locust does the HTTP work, HdrHistograms keep the latencies.

It runs alone in the loadgen pod and on the host, so it imports only its own modules and the shared leaves
(`testbed.errors`, `proc`, `ports`, `paths`); everything else may import it.
"""
