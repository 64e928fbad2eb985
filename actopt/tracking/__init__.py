"""The tracking layer: the only code that talks to MLflow. Training writes through a RunLogger from
``runlog``; sweeps keep their books with ``records``; analysis reads with ``queries``."""
