"""The hub: every open WebSocket of this node by id, by concrete path and by room, and the way
to the other nodes' (`app.hub`, a `Hub`).

`app.hub` reaches connections from anywhere in the process (another handler, an HTTP route,
a background task, another thread through the `*_sync` twins). `Hub` is a face over four
parts, each with one job, and one loop:

- `tether.hub.registry.Registry`: this node's connections by id, path and room;
- `tether.hub.routing.ClusterRouter`: what goes to and comes from other nodes, addressed by
  typed topics (`tether.backplane.topic.Topic`: a path, a room, a node's inbox), and the
  subscriptions to the topics this node has members of;
- `tether.hub.presence.Presence`: who is in each room with what info, and the listeners;
- `tether.hub.keeper.HistoryKeeper`: the history rooms (`tether.hub.history`): numbered
  messages delivered once and in offset order, joins that catch up from a `Position` (a
  `Recovery` says whether it could, whole), gaps read back, losses reported (`on_loss`);
- `tether.hub.fanout.fan_out`: the one fan-out loop. A message is encoded once, its frame
  built once, and the same bytes handed to every target: by broadcast, publish, send_to,
  the messages of other nodes and the awaited deliveries of "wait" mode.

What `Hub` guarantees is in `tether.hub.facade`'s doc and docs/scaling.md.
"""

from ..backplane.history import NOWHERE, Position
from .facade import Hub
from .fanout import Exclude, Identified
from .history import KeptMessage, Recovery
from .presence import PresenceListener
from .registry import Member

__all__ = ["Hub", "Exclude", "Identified", "Member", "PresenceListener", "Position", "NOWHERE", "Recovery",
           "KeptMessage"]
