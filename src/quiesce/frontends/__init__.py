"""The front ends: every way an operator or a tool reads quiesce's state or asks for a change.
The REST API (``api``, with the MaxScale aliases), the web dashboard, the maxctrl-style CLI
client (``cli``), the HAProxy-style runtime socket and the Prometheus metrics. Every change they
ask for goes through :class:`quiesce.admin.AdminService`; none writes the registry itself."""
