-- The partner centre's result for a visit that rolled over to it (CallRecord.partner_result,
-- hotline/core/records.py; docs/data-model.md, "Rollover to the partner centre"). NULL when the
-- dialplan reported no partner call for the visit, as for every row written before this one.
ALTER TABLE hotline.calls
    ADD COLUMN partner_result text
        CHECK (partner_result IN ('answered', 'busy', 'noanswer', 'congestion', 'unavailable',
                                  'canceled'));
-- Reporting on the partner's failures: few rows, so a partial index.
CREATE INDEX calls_partner_result ON hotline.calls (partner_result, ended_at)
    WHERE partner_result IS NOT NULL;
