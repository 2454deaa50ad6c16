"""The one-command application: the ``tfrec-attn`` CLI, the stages of ``tfrec-attn run``,
its HTML/Markdown report and plots. Library code never imports from here."""
