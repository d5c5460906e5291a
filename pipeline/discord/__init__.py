"""Discord: verifying and parsing interactions, downloading attachments safely, the REST calls we make
(editing a deferred reply, executing a webhook, registering slash commands) and the progress forwarder.

Nothing here logs a token or a webhook URL: interaction tokens are added to ``pipeline.logs.REDACTOR``
when they arrive, and HTTP client logging (which prints request URLs) is kept quiet.
"""
