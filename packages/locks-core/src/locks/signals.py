"""Django signals sent on the life of a lock (sent only for the outermost of nested holds).

Every signal is sent with ``sender`` = the backend class and the keyword arguments:
``name``, ``alias``, ``backend``; plus:

* :data:`lock_acquired`: ``waited`` (seconds), ``token`` (fencing token or None), ``shared``;
* :data:`lock_released`: ``held`` (seconds);
* :data:`lock_timed_out`: ``waited`` (seconds), ``timeout``;
* :data:`lock_lost`: ``held`` (seconds), ``reason`` (text).

``lock_lost`` may be sent from the keeper thread; receivers must be thread-safe.
"""

from django.dispatch import Signal

lock_acquired = Signal()
lock_released = Signal()
lock_timed_out = Signal()
lock_lost = Signal()
