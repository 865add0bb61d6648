"""(being written)"""

NODES: tuple = ()
