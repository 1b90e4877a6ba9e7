import java.io.File;
import java.io.FileOutputStream;
import java.io.FileDescriptor;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;

/**
 * Decodes one recs.customer record value with Avro's BinaryMessageDecoder, which reads the
 * single-object header, looks the writer's schema up by fingerprint and resolves it to the
 * reader's. Add every schema version you ship (avro/history/recommendation.v*.avsc).
 *
 *   java -cp avro-1.12.2.jar:... DecodeRecs.java AVRO_DIR < value.bin
 */
public class DecodeRecs {
    public static void main(String[] args) throws Exception {
        File avroDir = new File(args[0]);
        Schema reader = new Schema.Parser().parse(new File(avroDir, "recommendation.avsc"));
        BinaryMessageDecoder<GenericRecord> decoder = new BinaryMessageDecoder<>(GenericData.get(), reader);
        File[] older = new File(avroDir, "history").listFiles((dir, name) -> name.startsWith("recommendation.v"));
        for (File f : older == null ? new File[0] : older) {
            decoder.addSchema(new Schema.Parser().parse(f));
        }
        GenericRecord rec = decoder.decode(System.in.readAllBytes());

        StringBuilder out = new StringBuilder("{");
        out.append("\"customer_id\":").append(str(rec.get("customer_id")));
        out.append(",\"list_id\":").append(str(rec.get("list_id")));
        out.append(",\"model_version\":").append(str(rec.get("model_version")));
        out.append(",\"items\":[");
        List<?> items = (List<?>) rec.get("items");
        for (int i = 0; i < items.size(); i++) {
            GenericRecord item = (GenericRecord) items.get(i);
            out.append(i == 0 ? "" : ",").append("{\"product_id\":").append(str(item.get("product_id")));
            out.append(",\"score\":").append((Double) item.get("score"));
            out.append(",\"reasons\":[");
            List<?> reasons = (List<?>) item.get("reasons");
            for (int r = 0; r < reasons.size(); r++) {
                out.append(r == 0 ? "" : ",").append(str(reasons.get(r)));
            }
            out.append("]}");
        }
        // UTF-8 whatever the platform's default (Java 17 takes it from the locale).
        new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8).println(out.append("]}"));
    }

    /** A JSON string (Avro strings arrive as Utf8). */
    static String str(Object s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toString().toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }
}
