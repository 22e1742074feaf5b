"""The composition root: builds every part from a Config, starts it, stops it in stages.

Start order follows the data flow of DESIGN §3: the store and registry first, persisted admin
state restored before any listener accepts (a server left in maintenance must not get a single
request after a restart), then the data plane, the monitors, and last the control plane.

Stop order is uvicorn's staged shutdown, per listener: stop accepting, close idle keep-alive
connections, wait for in-flight requests up to the grace period, then cancel what is left.

- :mod:`quiesce.app.core`: :class:`App`, its start and its stops;
- :mod:`quiesce.app.reload`: live reload of the config file (:meth:`App.reload`);
- :mod:`quiesce.app.upgrade`: both sides of ``quiesce run --takeover``;
- :mod:`quiesce.app.run`: the process around it (:func:`run_forever`: signals, readiness).
"""

from quiesce.app.core import App, StartupError
from quiesce.app.run import install_event_loop_policy, run_forever

__all__ = ["App", "StartupError", "install_event_loop_policy", "run_forever"]
