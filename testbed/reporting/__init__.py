"""What is made of results: statistics (`stats`: merged histograms, bootstrap intervals), the run's analysis
(`analysis`: validity, overhead per mesh and rate), the reports (`report` writes summary.json and report.md,
`html` the plotly page, `text` what both print), `compare` (two runs), `claims` and `claims_check` (vendors'
published figures and the comparison with them), and `smp` (the Service Mesh Performance export).

Reads result files only: may import the shared leaves, `testbed.loadgen` (the result format and its
histograms) and `testbed.spec`; never a platform, a mesh, the Kubernetes plan or the run.
"""
