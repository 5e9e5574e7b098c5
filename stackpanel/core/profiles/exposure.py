"""What a profile opens to the network: the warnings `validate`, `up` and the panel show.

A node may listen beyond loopback only with ``expose: true`` (the schema refuses it otherwise);
once it does, the user is told every time, and an app server reachable around its proxy is
called out: requests that skip the proxy skip its routes, limits and Host check.
"""
from __future__ import annotations

import ipaddress

from stackpanel.core.profiles.schema import AppServerNode, Profile


def exposure_warnings(profile: Profile) -> list[str]:
    warnings: list[str] = []
    for name, node in profile.nodes.items():
        if not node.is_exposed:
            continue
        everywhere = ipaddress.ip_address(node.host).is_unspecified
        where = f"every network interface (port {node.port})" if everywhere else node.address
        text = f"node {name!r} listens on {where}: other machines on the network can reach it"
        fronts = sorted({e.source for e in profile.edges() if e.target == name})
        if isinstance(node, AppServerNode) and fronts:
            text += (f"; it is behind {', '.join(repr(f) for f in fronts)}, and a request sent to it directly "
                     "bypasses that proxy (its routes, limits and Host check): bind it to 127.0.0.1")
        elif everywhere and not isinstance(node, AppServerNode):
            text += "; clients must use a name listed in its server_names (or localhost), others get 421"
        warnings.append(text)
    return warnings
