"""One module per IKEv2 exchange, like strongSwan's tasks.

Each initiator-side exchange is a :class:`~.base.Task` (build a request,
process its response); each module also has the responder's ``respond``
function (process a request, build the response).
"""
