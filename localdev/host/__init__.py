"""Local Azure Functions host (dev/test only): runs a v2-programming-model app against Azurite.

Azure Functions Core Tools cannot be installed everywhere the project is developed, so this
package runs ``function_app.py`` the way ``func start`` does for the triggers the app uses
(queue, timer, HTTP, and Event Hub through the admin API), honouring host.json. Entry points:
``python -m localdev.host``, :class:`localdev.host.runtime.LocalHost` (in-process) and
:func:`localdev.host.launcher.start_host` (subprocess). Never deployed.
"""
from .launcher import HostProcess, HostStartTimeout, start_host
from .runtime import HostStartError, LocalHost

__all__ = ["LocalHost", "HostStartError", "HostProcess", "HostStartTimeout", "start_host"]
