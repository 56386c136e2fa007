"""Alerts: fixed rules on streams, evaluated in the runtime, sent to the faces and a webhook.

`rules` says what each rule means and keeps one alert's state; `engine` feeds them live prices,
closed candles and the exchange's time; `webhook` posts each firing. No Textual here.
"""
