"""The system under test: the demo service (`python -m testbed.sut.service`, one program for every service of
a topology, its work and calls set by the topology file), the null server (`python -m testbed.sut.nullserver`,
for benchmarks of the load generator itself), and a topology's services as local processes (`local`).

May import the shared leaves and `testbed.spec`; nothing else (it runs inside the image with no mesh code).
"""
