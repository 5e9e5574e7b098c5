"""Local HTTPS: a per-user, name-constrained certificate authority, leaf certificates per run, and
the steps that make browsers and the system trust the CA (and undo it). Qt-free.

See :mod:`stackpanel.core.tls.ca` for why a stolen CA key cannot impersonate a real site and how
names a profile declares beyond loopback are permitted.
"""
from __future__ import annotations

from stackpanel.core.tls.ca import (
    LeafCert,
    TlsError,
    ca_dir,
    ensure_ca,
    issue_leaf,
    name_problem,
    names_outside_ca,
)
from stackpanel.core.tls.trust import (
    NssDb,
    StoreStatus,
    SystemStore,
    TrustError,
    TrustStatus,
    TrustStep,
    apply_trust,
    detect_system_store,
    nss_dbs,
    trust_plan,
    trust_status,
)

__all__ = [
    "LeafCert",
    "NssDb",
    "StoreStatus",
    "SystemStore",
    "TlsError",
    "TrustError",
    "TrustStatus",
    "TrustStep",
    "apply_trust",
    "ca_dir",
    "detect_system_store",
    "ensure_ca",
    "issue_leaf",
    "name_problem",
    "names_outside_ca",
    "nss_dbs",
    "trust_plan",
    "trust_status",
]
