"""Governance by signed > 2/3 quorum certificates, CometBFT-style (sans-IO: no trio, no I/O, no clock reads).

``formats`` holds the signed objects and their wire formats (electorate, proposal, vote, evidence,
certificate; see its docstring for the model and the safety argument); ``core`` the state machine of one
participant (:class:`Governance`) and the honest member's behaviour (:class:`Voter`). Persistence is in
``node.agents.govstore``, gossip and the CLI in the adapters.
"""

from node.agents.governance.core import (
    ACCEPTED,
    DUPLICATE,
    EQUIVOCATION,
    REJECTED,
    Executed,
    Governance,
    Voter,
    VoteResult,
)
from node.agents.governance.formats import (
    MEMBERSHIP_ROUND,
    Action,
    ActionKind,
    Certificate,
    Electorate,
    Evidence,
    Proposal,
    Value,
    Vote,
    VoteType,
    certificate_from_bytes_untrusted,
    evidence_from_bytes_untrusted,
    has_quorum,
    make_proposal,
    proposal_from_bytes_untrusted,
    sign_bytes,
    sign_vote,
    verify_certificate,
    verify_evidence,
    verify_vote,
    vote_from_bytes_untrusted,
)

__all__ = [
    "ACCEPTED",
    "DUPLICATE",
    "EQUIVOCATION",
    "MEMBERSHIP_ROUND",
    "REJECTED",
    "Action",
    "ActionKind",
    "Certificate",
    "Electorate",
    "Evidence",
    "Executed",
    "Governance",
    "Proposal",
    "Value",
    "Vote",
    "VoteResult",
    "VoteType",
    "Voter",
    "certificate_from_bytes_untrusted",
    "evidence_from_bytes_untrusted",
    "has_quorum",
    "make_proposal",
    "proposal_from_bytes_untrusted",
    "sign_bytes",
    "sign_vote",
    "verify_certificate",
    "verify_evidence",
    "verify_vote",
    "vote_from_bytes_untrusted",
]
