"""The open-loop load engine (`testbed load`): Locust does the HTTP work, HdrHistograms keep the latencies."""
