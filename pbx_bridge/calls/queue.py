"""What the call pipeline's queue carries: the AMI's items and the calls read from Asterisk's CEL.

Defined here, above both sources, so the AMI layer does not import the CEL reader.
"""

from __future__ import annotations

from pbx_bridge.ami.events import AmiItem
from pbx_bridge.cel.rows import CelCalls

QueueItem = AmiItem | CelCalls
