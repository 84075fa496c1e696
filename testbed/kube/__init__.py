"""What the kind platform applies to a cluster, generated from a topology and tested without one."""
