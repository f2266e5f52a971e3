"""tunsec's configuration: strongSwan's swanctl.conf syntax and keys, typed and validated.

One module per concern; import from the module (this package re-exports
nothing, so each module loads on its own and there is no import cycle):

* :mod:`~tunsec.conf.config`: :func:`load_config` / :func:`parse_config` -> :class:`Config`, the top level.
* :mod:`~tunsec.conf.errors`: ``ConfigIssue`` (file, line, key, message), ``ConfigError``, ``BadValue``.
* :mod:`~tunsec.conf.syntax`: the settings syntax (sections, ``include``) -> ``Section`` tree.
* :mod:`~tunsec.conf.values`: value parsers (numbers, durations, sizes, booleans, addresses, selectors, ids).
* :mod:`~tunsec.conf.reader`: ``SectionReader``, one section checked against its keys.
* :mod:`~tunsec.conf.tunsec_section`: ``tunsec { }``.
* :mod:`~tunsec.conf.manual`: ``manual { }`` tunnels.
* :mod:`~tunsec.conf.connections`: ``connections { }`` and their children, as the IKE service runs them.
* :mod:`~tunsec.conf.children`: ``connections.X.children { }``, one ``Child`` per section.
* :mod:`~tunsec.conf.auth_rounds`: ``connections.X.local { }`` / ``remote { }``, with their credentials.
* :mod:`~tunsec.conf.secrets`: ``secrets { }`` (PSKs, key passphrases).
* :mod:`~tunsec.conf.authorities`: ``authorities { }`` (CA certificates).
* :mod:`~tunsec.conf.credentials`: certificate and key files (x509/, x509ca/, private/...).

A new key: add it where its section is read (one ``r.get(...)`` line, a value
parser from values.py or next to it) and a field on that section's dataclass.
"""
