"""The autoscaler: sizes each pool's fleet from its demand."""
